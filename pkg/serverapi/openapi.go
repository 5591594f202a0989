package serverapi

import _ "embed"

//go:embed openapi.json
var openAPI []byte

// OpenAPI returns the OpenAPI 3 document of the HTTP API (served at GET
// /api/v1/openapi.json).
func OpenAPI() []byte { return openAPI }
