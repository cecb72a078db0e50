"""Small pieces shared by the agents: spaces/signatures, episode replay, networks, seeding, logging,
checkpoints and the deployment `Policy` protocol.

Importing this package imports torch only through `nets` and `checkpoint`; `spaces`, `replay`,
`seeding` (numpy part), `logs` and `executors` (parallel map: process pool or Ray) are torch-free.
"""

__all__ = ["spaces", "replay", "nets", "seeding", "logs", "checkpoint", "policy", "executors"]
