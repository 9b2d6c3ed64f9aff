"""`python -m rasft_trl.demo`: see [`rasft_trl.demo.run`]."""

import os

# Before transformers / huggingface_hub are imported: the demo never reaches for the Hub.
os.environ["HF_HUB_OFFLINE"] = "1"

from rasft_trl.demo.run import main  # noqa: E402

if __name__ == "__main__":
    main()
