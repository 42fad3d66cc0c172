"""The diffusion family's quality targets (denoise, super-resolve, generate on held-out MNI152):
``quality.py`` restricted to ``--families diffusion``; every other option is passed through.

    python benchmarks/diffusion_quality.py --dims 2 --default-only
"""

import sys

from quality import main

if __name__ == "__main__":
    sys.argv[1:1] = ["--families", "diffusion"]  # a --families given on the command line comes later and wins
    main()
