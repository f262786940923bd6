"""The method, one module per stage: distributions (sample) -> nudge -> integrate -> project ->
scale -> refine, tied together by engine."""
