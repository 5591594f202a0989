// Package client is a Go Bayeux 1.0 client for this broker and for other
// Bayeux servers (CometD, Faye).
//
// # Use
//
//	c, err := client.Dial(ctx, client.Config{URL: "http://host/cometd"})
//	sub, err := c.Subscribe(ctx, "/chat/*", func(m *client.Message) { ... })
//	err = c.Publish(ctx, "/chat/room", map[string]string{"text": "hi"})
//	err = sub.Unsubscribe(ctx)
//	err = c.Close(ctx)
//
// # Transports
//
// Config.Transports lists the connection types in order of preference
// (default websocket, then long-polling). The handshake is sent on the first
// one that can carry it (a websocket that cannot be dialled falls back to the
// next), and the connection type is then negotiated: the first type of the
// client's list that the server's handshake reply supports.
//
//   - long-polling: every request is its own HTTP POST of a JSON array, so a
//     publish or subscribe never waits behind the held /meta/connect
//     (net/http opens a second connection).
//   - callback-polling: like long-polling, but every request is an HTTP GET
//     carrying the JSON array in the "message" query parameter and a
//     callback name in "jsonp"; the response is a JavaScript call of that
//     callback with the JSON array (JSONP), unwrapped and decoded like a
//     long-polling response. A batch whose URL would exceed
//     Config.MaxURLLength is split into several GETs sent in order; a single
//     message that does not fit fails with an error. It is never chosen
//     unless Config.Transports names it.
//   - websocket (github.com/coder/websocket): one socket, one writer
//     goroutine and one reader goroutine. Replies are matched to requests by
//     message id; deliveries may arrive in any frame.
//
// # Connect loop and advice
//
// One goroutine runs the /meta/connect loop and obeys the server's advice:
// reconnect "retry" (connect again after advice.interval), "handshake"
// (handshake again, then connect) or "none" (stop: Err reports why). The
// client proposes no advice of its own. Each connect waits at most
// advice.timeout plus Config.TimeoutMargin; past that the request (or the
// socket) is considered dead. Transport errors (network, HTTP status, socket
// closed, timeout) are retried with exponential back-off with jitter between
// Config.BackoffMin and Config.BackoffMax.
//
// # Re-handshake
//
// When the server asks for a new handshake (session expired, 402, queue
// overflow, ...) the client handshakes again, gets a new clientId and
// resubscribes every active subscription, keeping the handlers. Publish,
// Subscribe and Unsubscribe called meanwhile wait (bounded by their context)
// until the new session is ready. A request already sent on the old session
// fails with the server's error (usually 402); it is not retried, because a
// publish might then be delivered twice.
//
// Two transport failures are known not to have reached the server, and a
// publish is sent again after them: a POST on a kept-alive connection the
// server closed as idle (net/http's "server closed idle connection": a
// balancer reloading closes them all), and a publish left unanswered when
// the server closed its websocket with 1001 "going away" (a node of this
// project shutting down answers every frame it processed before it closes
// so; a server that closes with 1001 after processing a frame it leaves
// unanswered could see that publish twice).
//
// # Ordering and handlers
//
// Every handler is called from one dispatcher goroutine, one message at a
// time, in the order in which messages arrived from the server (across all
// subscriptions). A message matching several subscriptions is passed to
// each of their handlers, in subscription order. Handlers may call Publish,
// Subscribe and Unsubscribe, but must not call Close (it waits for the
// dispatcher). The queue between the transport and the dispatcher is not
// bounded: a handler slower than the arrival rate makes it grow. Messages
// still queued when Close is called are discarded.
//
// # Extensions
//
//   - ack (on unless Config.DisableAck): the handshake carries ext.ack true;
//     if the server answers ext.ack true, every /meta/connect carries
//     ext.ack = the last batch id received, so the server resends batches
//     lost in transit (no loss, no duplicates). A new session starts at 0.
//   - replay (Config.Replay): the handshake carries ext.replay true; the
//     client remembers the last replay id per channel, from a delivery's
//     ext.replay or data.event.replayId, and subscribes (or resubscribes after
//     a re-handshake) with ext.replay {channel: id}; WithReplayID sets the
//     starting id of a new subscription (-1 new events, -2 all retained).
//
// # Concurrency and goroutines
//
// A Client is safe for concurrent use. Every blocking method takes a
// context. The client owns: the connect loop, the dispatcher, and with a
// websocket its reader and writer (replaced when the socket is redialled).
// Close sends /meta/disconnect (best effort, bounded by its context), stops
// every goroutine and waits for them; after Close returns no goroutine of
// the client is left (idle HTTP connections of Config.HTTPClient are
// closed too).
//
// # Files
//
// client.go (Client, Dial, Close), config.go (Config and its defaults),
// wire.go (reply decoding, incoming dispatch, one request over the
// negotiated transport), subscribe.go (Publish, Subscribe, Unsubscribe,
// replay positions), connect.go (handshake, the connect loop and its
// advice, the dispatcher), transport.go and transport_jsonp.go (the three
// transports).
package client
