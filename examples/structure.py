"""Write the paper's 'structure' figure as PNG (see training/app/figures.py for what it shows).

    python examples/structure.py [OUT_DIR] [--quick]
"""
import sys

from training.app.figures import reproduce

out = next((a for a in sys.argv[1:] if not a.startswith("--")), "figures")
for path in reproduce("structure", out=out, quick="--quick" in sys.argv):
    print(path)
