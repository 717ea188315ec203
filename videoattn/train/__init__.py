"""Training: the loop (:mod:`.loop`), what a checkpoint saves (:mod:`.state`), mid-epoch
checkpoints on signals and timers (:mod:`.midepoch`), device-side sums (:mod:`.meter`), optimizer
and schedule (:mod:`.solver`), precise BN statistics (:mod:`.precise_bn`) and cluster submission
with submitit (:mod:`.submit`)."""
