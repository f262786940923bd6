"""Durable runs: checkpoints that a killed run resumes from, the provenance that every
result records, and the rules for claiming an output folder."""
