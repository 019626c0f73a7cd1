"""The applications of the training library: what only the ``cotgd`` command line and its reports
use (docs/architecture.md).  ``cli`` (the command), ``verify`` (every check of the paper),
``selftest`` (the device self-test), ``figures`` (the paper's figures), ``bench`` (speed figures),
``baseline`` (the literal training loop the benchmark compares with), ``sweep_plot`` (phase
diagrams of a sweep).  The library (``training.*`` outside this package) never imports it.
"""
