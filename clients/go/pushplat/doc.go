// Package pushplat is the Go SDK for pushplat: a Client for devices, which holds a
// stream to an edge (Edge.Connect) and receives the messages pushed to it, and a Sender
// for backends, which sends messages through the api (Push.Send).
//
// It mirrors the Python SDK (clients/python/pushplat_client): the Client says Hello with a
// token (or user and device ids when auth is off), acks what it hands to the application,
// drops duplicates by message_id, heartbeats, honours GoAway, and reconnects with
// exponential backoff plus full jitter. UNAUTHENTICATED, INVALID_ARGUMENT,
// PERMISSION_DENIED and UNIMPLEMENTED stop it with an *Error; everything else is retried.
//
//	client, err := pushplat.Dial("127.0.0.1:50051", pushplat.Options{Token: token})
//	if err != nil { ... }
//	defer client.Close()
//	for {
//		msg, err := client.Recv(ctx)
//		if err != nil { ... }
//		handle(msg)
//	}
package pushplat

// Version is this SDK's version, sent as Hello.client_version ("pushplat-go/" + Version).
const Version = "0.1.0"
