"""What training, evaluation and the model tools share: checkpoint files (:mod:`.checkpoint`),
loading a model for inference (:mod:`.inference`), device decisions (:mod:`.device`) and logging
(:mod:`.logger`)."""
