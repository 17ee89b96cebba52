package agents

import "time"

// probeAckWait: how long a probe taken by a bridge that died stays invisible to its siblings.
const probeAckWait = 15 * time.Second
