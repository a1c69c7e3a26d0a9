from collections.abc import Callable, Sequence

from django import forms
from django.contrib.admin import helpers
from django.template.response import TemplateResponse


class ReadOnlyAdminMixin:
    """An admin that shows rows and never writes them: records that only services may create."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


def note_field(*, help_text: str, required: bool = True) -> forms.CharField:
    """An operator's note on a change: free text that lands (scrubbed) in the audit log."""
    return forms.CharField(
        required=required, max_length=2000, widget=forms.Textarea(attrs={"rows": 3, "cols": 70}), help_text=help_text
    )


class ActionNoteForm(forms.Form):
    note = note_field(help_text="Why. Kept for the next operator and in the audit log (scrubbed); do not paste customer data.")


def admin_action_with_note(
    modeladmin,
    request,
    queryset,
    *,
    action: str,
    verb: str,
    noun: str,
    explanation: str,
    preview_headers: Sequence[str],
    preview_rows: Callable[[object], list[tuple]],
    apply: Callable[[str], None],
    form_id: str = "action-note-form",
):
    """An admin action that first asks for a note on an intermediate page, then applies it.

    The first POST (the action from the change list) renders the note page; its submit (`apply`)
    comes back to the same action with the selection, and `apply(note)` does the work through a
    service. Returns what an admin action returns: a response, or None to go back to the list.
    """
    form = ActionNoteForm(request.POST if "apply" in request.POST else None)
    if form.is_valid():
        apply(form.cleaned_data["note"])
        return None  # the admin redirects back to the (filtered) list
    select_across = request.POST.get("select_across") == "1"
    selected = request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": f"{verb} {noun}",
        "opts": modeladmin.model._meta,
        "form": form,
        "form_id": form_id,
        "action": action,
        "verb": verb,
        "noun": noun,
        "explanation": explanation,
        "count": queryset.count(),
        "preview_headers": list(preview_headers),
        "preview": preview_rows(queryset)[:20],
        "select_across": select_across,
        # With "select all" the admin rebuilds the queryset from the URL's filters; one pk is
        # enough to route the POST back to this action.
        "selected": selected[:1] if select_across else selected,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
    }
    request.current_app = modeladmin.admin_site.name
    return TemplateResponse(request, "admin/action_note.html", context)
