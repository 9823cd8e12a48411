// The bench's load generator: devices and senders in Go, so the client side costs the
// shared two cores little. Built by benchmarks/bench.py into a cache dir, never committed.
module github.com/pushplat/pushplat/benchmarks/loadgen

go 1.26.0

require (
	github.com/coder/websocket v1.8.15
	github.com/pushplat/pushplat/clients/go v0.0.0
	golang.org/x/sys v0.48.0
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260817212433-ac3dfec99bb1
	google.golang.org/grpc v1.85.0
	google.golang.org/protobuf v1.36.12
)

require (
	golang.org/x/net v0.60.0 // indirect
	golang.org/x/text v0.42.0 // indirect
)

// The SDK in this checkout, not a published module.
replace github.com/pushplat/pushplat/clients/go => ../../clients/go
