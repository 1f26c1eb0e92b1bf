"""Training: from a checked plan (`plan`) through the launcher (`launch`) to each rank
(`rank`), whose `Trainer` runs the loop on a DeepSpeed `Runtime` (`ds` is the only module
that imports DeepSpeed). docs/architecture.md draws the chain."""
