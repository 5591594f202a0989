package protocol

import "bytes"

// Detached returns a copy of m that shares no memory with the request it
// was decoded from: ID, Data and Ext (windows on the request buffer) are
// copied to their exact size, and the lazily decoded ext map is dropped
// (ExtField decodes it again if asked). A transport calls it for a message
// it keeps for long, such as a held /meta/connect, so that the request
// buffer and the ext map are not kept with it.
func (m *Message) Detached() *Message {
	cp := *m
	cp.ID, cp.Data, cp.Ext = bytes.Clone(m.ID), bytes.Clone(m.Data), bytes.Clone(m.Ext)
	cp.ext = nil
	return &cp
}
