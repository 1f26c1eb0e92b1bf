"""What a run measures and records: the training log's typed records, system readings
(NVML, CPU, memory), device peaks and MFU, and how they are formatted."""
