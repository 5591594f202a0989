package demo

// ClientJS returns the browser Bayeux client (static/bayeux.js, an ES
// module exporting BayeuxClient), for other pages the node serves.
func ClientJS() []byte {
	b, err := staticFS.ReadFile("static/bayeux.js")
	if err != nil {
		panic("demo: bayeux.js not embedded: " + err.Error()) // a build defect
	}
	return b
}
