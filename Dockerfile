# payhook image: web (gunicorn), worker and beat (docker-compose.yml picks the command).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

# Dependencies first, from pyproject.toml alone, so a code change reuses this layer. The project
# itself installs no package (it runs from /app), so its pinned dependency list is all pip needs.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt

COPY . .
# Static files are collected at build time (they depend on the code only). Settings need their
# required variables to import: throwaway values, never used at run time.
RUN DJANGO_SECRET_KEY=collectstatic-only FIELD_ENCRYPTION_KEYS=Y29sbGVjdHN0YXRpYy1vbmx5LWtleS0wMDAwMDAwMDA= \
        BLIND_INDEX_KEY=collectstatic-only AUDIT_CHAIN_KEY=collectstatic-only CELERY_BROKER_URL=memory:// \
        python manage.py collectstatic --no-input \
    && useradd --system --uid 10001 --no-create-home payhook \
    && chown payhook var

USER payhook
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --retries=5 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://localhost:8000/healthz', timeout=3)"]
CMD ["gunicorn", "config.wsgi:application", "--bind", "0.0.0.0:8000", "--config", "config/gunicorn.py"]
