"""Cluster tests: processes they start are stopped by process id (``training.sweep.DaskProcesses``);
what a run on a real cluster reports (the SLURM version, its job ids, the table) is printed in
pytest's terminal summary (``cluster_helpers.report``), so that CI's log shows that it ran, with
or without ``-s``."""
from cluster_helpers import REPORT
from threads import one_torch_thread  # noqa: F401  (an autouse fixture)


def pytest_terminal_summary(terminalreporter):
    if REPORT:
        terminalreporter.section("cluster runs")
        for line in REPORT:
            terminalreporter.write_line(line)
