# Integration fixtures (worker_env, celery_worker_process) live in tests/conftest.py, shared with tests/faults/.
