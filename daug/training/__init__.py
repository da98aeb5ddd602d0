"""LoRA training internals: data (formatting, masking, batch order), loss (reply-only, fast LM
head), loop (optimizer, checkpoints, resume, distributed). The stage and CLI are daug/train.py."""
