"""How maps are judged: fidelity, recognisability, and the anomaly index. Apart from the method."""
