# The admin's "Customer lookup" page: a model without a table, for its admin entry and permission.

from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
    ]

    operations = [
        migrations.CreateModel(
            name='Lookup',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
            ],
            options={
                'verbose_name': 'customer lookup',
                'verbose_name_plural': 'customer lookup',
                'managed': False,
                'default_permissions': ('view',),
            },
        ),
    ]
