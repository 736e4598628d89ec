# `make demo` and `make test` set everything up themselves on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export RAY_USAGE_STATS_ENABLED ?= 0

.PHONY: install demo test test-hosts smoke bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	@start=$$(date +%s); \
	$(VENV)/bin/raydiff run sweeps/demo.yaml && \
	$(VENV)/bin/raydiff report demo --out reports/demo && \
	echo "" && \
	echo "demo finished in $$(( $$(date +%s) - start )) s" && \
	echo "figures and tables: $$(pwd)/reports/demo" && \
	echo "MLflow UI:          $(VENV)/bin/raydiff ui demo   (starts it), then open" && \
	echo "                    $$($(VENV)/bin/raydiff ui demo --url)"

# two pytest-xdist workers: the tests that train on one thread (one_thread) fill the core
# that was idle; the real-process tests wait on Ray, MLflow and their drivers with timeouts,
# not fixed sleeps. TEST_WORKERS=0 runs everything in this process.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -q --durations=15 $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS))

# the cluster path on real SSH hosts made on this machine (root, sshd, rsync; minutes):
# docs/cluster.md's walkthrough and a host lost mid-sweep (tests/test_cluster_hosts.py)
test-hosts: $(STAMP)
	$(PY) -m pytest -q -s -m cluster_hosts tests/test_cluster_hosts.py

# CPU benchmarks, each printing ratios measured in its own run (docs/performance.md);
# BENCH_ARGS=--smoke runs them at tiny sizes. wrn_epoch.py and data_params_demo.py take
# their own arguments and are run by hand.
BENCHMARKS := engine_vs_loop grid_throughput overhead memory gpu_packing pack_throughput models_per_hour stage_graph eval_passes
bench: $(STAMP)
	for b in $(BENCHMARKS); do nice $(PY) benchmarks/$$b.py $(BENCH_ARGS) || exit 1; done

clean:
	rm -rf mlflow.db mlartifacts ray_results reports
