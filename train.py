"""Train and test one configuration: `python train.py optimizer=adamw scheduler=cosine` (Hydra overrides)."""

from optimlight.cli import main

if __name__ == "__main__":
    main()
