"""Studies and command-line tools built on the runtime: the A/B gate, fidelity, trace and the other studies."""
