# The portal's one image. docker-compose.yml runs every process from it (web, worker, beat,
# init, and for local development the AWS emulator `aws` and the dev OIDC provider `idp`),
# each as its Procfile entry through scripts/procfile-run. Without a command it serves the
# web app on 0.0.0.0:8000, which is what a production deployment wants.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PORTAL_ENV=production

# A fixed, numeric, unprivileged user: Kubernetes' runAsNonRoot can verify a numeric USER.
RUN groupadd --system --gid 10001 portal \
    && useradd --system --uid 10001 --gid portal --create-home --home-dir /home/portal --shell /usr/sbin/nologin portal

WORKDIR /app

# Dependencies in their own layer: code changes don't reinstall them. The lock pins every
# package, the transitive ones too, and pip installs only files whose hashes it lists
# (docs/development.md, "Dependencies"). Every pin has a wheel for linux/amd64 and
# linux/arm64, so the slim image needs no compiler.
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes -r requirements.lock

# The code stays root-owned and read-only to the portal user; only var/ (beat's schedule,
# the dev IdP's data) and staticfiles/ (`init` collects again) are writable.
COPY . .
RUN mkdir -p var/devidp staticfiles \
    && chown -R portal:portal var staticfiles

USER 10001:10001

# Collected with the production storage (hashed names + manifest, gzip), which a DEBUG run
# serves as well. PORTAL_ENV=dev only supplies throwaway secrets for this one command; the
# image itself runs as production (ENV above): without its secrets it refuses to start.
RUN PORTAL_ENV=dev DJANGO_DEBUG=false python manage.py collectstatic --noinput -v0

EXPOSE 8000
CMD ["gunicorn", "portal.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "2", "--threads", "4", "--no-control-socket", "--access-logfile", "-"]
