"""Write the paper's 'ood' figure as PNG (see training/app/figures.py for what it shows).

    python examples/ood.py [OUT_DIR] [--quick]
"""
import sys

from training.app.figures import reproduce

out = next((a for a in sys.argv[1:] if not a.startswith("--")), "figures")
for path in reproduce("ood", out=out, quick="--quick" in sys.argv):
    print(path)
