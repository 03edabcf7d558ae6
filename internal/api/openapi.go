package api

import _ "embed"

//go:embed openapi.json
var openapiJSON []byte

// OpenAPIDocument returns the OpenAPI 3.0 document of the v1 API
// (openapi.json beside this file), for Options.OpenAPI. The slice is shared;
// callers must not modify it.
func OpenAPIDocument() []byte { return openapiJSON }
