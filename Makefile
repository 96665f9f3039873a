# Miandan — the two commands of the quick start are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
# The simulated merchant (its own process; `make demo` and `make run` start it beside the platform).
MERCHANT_PORT ?= 8790
MERCHANT_STATE ?= simulated-merchant-$(MERCHANT_PORT).sqlite3
MERCHANT_URL = $${MIANDAN_MERCHANT_URL:-http://127.0.0.1:$(MERCHANT_PORT)}

# Test defaults: the local PostgreSQL and Redis (override any of them from the environment).
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/miandan
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15

.PHONY: demo test money-coverage run worker beat lint bench install clean cluster cluster-stop cluster-deps

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

demo: install ## run the platform with the demo campaign on http://127.0.0.1:8000 (SQLite, Celery eager, simulated merchant)
	$(PY) manage.py migrate --noinput
	$(PY) manage.py seed_demo --admin-password $${MIANDAN_DEMO_ADMIN_PASSWORD:-miandan-demo}
	@echo ""
	@echo "  Miandan demo:   http://$(HOST):$(PORT)/"
	@echo "  Campaign page:  http://$(HOST):$(PORT)/c/spring-tea/   (demo phones 13800000001..20; the code shows on the page)"
	@echo "  Admin:          http://$(HOST):$(PORT)/admin/   (marketing, finance, support: miandan-demo; superuser admin: $${MIANDAN_DEMO_ADMIN_PASSWORD:-miandan-demo})"
	@echo "  API docs:       http://$(HOST):$(PORT)/api/docs/"
	@echo "  Health:         http://$(HOST):$(PORT)/healthz"
	@echo "  Merchant:       $(MERCHANT_URL) (simulated store system: accepts and delivers orders by itself)"
	@echo ""
	export MIANDAN_MERCHANT_URL=$(MERCHANT_URL); \
	$(PY) manage.py simulated_merchant --callback-url http://127.0.0.1:$(PORT) --state $(MERCHANT_STATE) & merchant=$$!; \
	trap 'kill $$merchant 2>/dev/null' EXIT INT TERM; \
	DJANGO_DEBUG=$${DJANGO_DEBUG:-1} $(PY) manage.py runserver --insecure --noreload $(HOST):$(PORT)

# Branch coverage (pytest-cov, settings in pyproject.toml) is measured on every `make test` (COVERAGE=0 turns it
# off); a whole-suite run (no PYTEST_ARGS) then fails when a money module is under MONEY_COVERAGE % of branches.
COVERAGE ?= 1
# The suite runs on TEST_WORKERS pytest-xdist workers (one test file per worker at a time: module fixtures stay
# together); each has its own test database, Redis prefix and Celery queue. Much of the suite waits on servers and
# workers it starts, so two workers on two cores halve the wall time (891 s -> about 360 s measured); 0 runs serially.
TEST_WORKERS ?= 2
MONEY_MODULES := campaign/services.py,vouchers/services.py,orders/services.py,referrals/services.py
MONEY_COVERAGE ?= 95
comma := ,

test: install ## run the whole suite against PostgreSQL and Redis on 127.0.0.1 (with branch coverage)
	DATABASE_URL="$${DATABASE_URL:-$(TEST_DATABASE_URL)}" \
	REDIS_URL="$${REDIS_URL:-$(TEST_REDIS_URL)}" \
	CELERY_BROKER_URL="$${CELERY_BROKER_URL:-$${REDIS_URL:-$(TEST_REDIS_URL)}}" \
	$(VENV)/bin/pytest $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile) \
	  $(if $(filter 1,$(COVERAGE)),--cov --cov-report=term) $(PYTEST_ARGS)
	@if [ "$(COVERAGE)" = 1 ] && [ -z "$(strip $(PYTEST_ARGS))" ]; then $(MAKE) --no-print-directory money-coverage; fi

money-coverage: ## each money module at >= MONEY_COVERAGE % branch coverage, from the last `make test`'s .coverage
	@echo "money modules, branch coverage (each must be >= $(MONEY_COVERAGE) %):"
	@$(VENV)/bin/coverage report --include=$(MONEY_MODULES) --no-skip-covered
	@status=0; for module in $(subst $(comma), ,$(MONEY_MODULES)); do \
	  $(VENV)/bin/coverage report --include=$$module --fail-under=$(MONEY_COVERAGE) >/dev/null \
	    || { echo "FAIL: $$module is under $(MONEY_COVERAGE) % branch coverage"; status=1; }; \
	done; exit $$status

run: install ## production-like: gunicorn (shape from gunicorn.conf.py) + Celery worker + beat (+ the simulated merchant unless MIANDAN_MERCHANT_ADAPTER names a real one)
	@test -n "$$DATABASE_URL" -a -n "$$REDIS_URL" || { echo "set DATABASE_URL and REDIS_URL (see README)"; exit 1; }
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput >/dev/null
	export MIANDAN_MERCHANT_URL=$(MERCHANT_URL); \
	$(VENV)/bin/celery -A miandan worker -l info --concurrency 2 -Q $${CELERY_DEFAULT_QUEUE:-miandan} & worker=$$!; \
	$(VENV)/bin/celery -A miandan beat -l info --schedule /tmp/miandan-beat & beat=$$!; \
	merchant=; \
	if [ -z "$$MIANDAN_MERCHANT_ADAPTER" ] || [ "$$MIANDAN_MERCHANT_ADAPTER" = orders.merchant.SimulatedMerchant ]; then \
	  $(PY) manage.py simulated_merchant --callback-url $${MIANDAN_PUBLIC_BASE_URL:-http://127.0.0.1:$(PORT)} \
	    --state $(MERCHANT_STATE) & merchant=$$!; \
	fi; \
	trap 'kill $$worker $$beat $$merchant 2>/dev/null' EXIT INT TERM; \
	$(VENV)/bin/gunicorn miandan.wsgi -b $(HOST):$(PORT)

# The production topology on one machine (deploy/cluster.py; docs/operations.md "The cluster"): nginx on
# CLUSTER_PORT in front of two gunicorn nodes, PgBouncer, a Redis Cluster, RabbitMQ, two workers and beat.
CLUSTER_PORT ?= 8080
CLUSTER_DIR ?= .cluster

cluster-deps: ## nginx and PgBouncer from Debian when missing (the way .ci/run installs what it needs)
	@missing=; \
	for bin in nginx pgbouncer redis-server; do \
	  command -v $$bin >/dev/null 2>&1 || [ -x /usr/sbin/$$bin ] || missing="$$missing $$bin"; \
	done; \
	pkgs=$$(echo $$missing | sed 's/redis-server/redis-server redis-tools/; s/nginx/nginx-light/'); \
	if [ -n "$$missing" ]; then \
	  echo "cluster: installing$$missing"; \
	  SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$pkgs >/dev/null; \
	fi

cluster: install cluster-deps ## start the cluster on http://127.0.0.1:$(CLUSTER_PORT) (own database miandan_cluster)
	CLUSTER_PORT=$(CLUSTER_PORT) CLUSTER_DIR=$(CLUSTER_DIR) $(PY) deploy/cluster.py start

cluster-stop: ## stop only what `make cluster` started (pids in $(CLUSTER_DIR)/state.json)
	CLUSTER_DIR=$(CLUSTER_DIR) $(PY) deploy/cluster.py stop

worker: install
	$(VENV)/bin/celery -A miandan worker -l info -Q $${CELERY_DEFAULT_QUEUE:-miandan}

beat: install
	$(VENV)/bin/celery -A miandan beat -l info --schedule /tmp/miandan-beat

lint: install
	$(VENV)/bin/ruff check .

bench: install ## every load test in turn (needs a quiet machine; ~10 minutes); see bench/README.md
	$(PY) bench/engine.py --json bench/results/engine.json
	$(PY) bench/referrals.py --json bench/results/referrals.json
	$(PY) bench/orders.py --json bench/results/orders.json
	$(PY) bench/overload.py --json bench/results/overload.json
	$(PY) bench/export.py --json bench/results/export.json

clean:
	rm -rf $(VENV) db.sqlite3 staticfiles simulated-merchant-*.sqlite3*
