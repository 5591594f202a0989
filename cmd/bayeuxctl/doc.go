// Command bayeuxctl calls the server API of a Bayeux node: publish,
// broadcast, channels, presence, history, disconnect, unsubscribe, nodes.
//
//	export BAYEUX_API=http://localhost:8081 BAYEUX_API_KEY=...
//	bayeuxctl publish /orders/42 '{"status":"shipped"}'
//	bayeuxctl presence /chat/room1
//	bayeuxctl disconnect CLIENTID
//
// Tables by default; --json prints the API's JSON answer.
package main
