package observability

// Test hooks: the watchers with their sources as functions.
var (
	WatchRetryFunc  = (*Telemetry).watchRetry
	WatchOutboxFunc = (*Telemetry).watchOutbox
	WatchSlotFunc   = (*Telemetry).watchSlot
	WatchRelayFunc  = (*Telemetry).watchRelay
)
