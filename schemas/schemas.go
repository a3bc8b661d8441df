// Package schemas holds millrace's public contract: one JSON Schema (draft
// 2020-12) for every command and event version in package events, in a file
// named after its wire name (orders.place-order.v1.json) and with the $id
// https://millrace.dev/schemas/<wire name>.json.
//
// The schemas are what outsiders see: clients of the REST gateway, services in
// other languages and the people who write them. They are data, embedded in the
// binary; package platform/schema compiles and applies them. Tests in this
// folder keep them in step with the Go types in package events.
package schemas

import (
	"embed"
	"io/fs"
)

//go:embed *.json
var files embed.FS

// FS returns the schema files, one <wire name>.json per message type, at the
// root of the returned file system. The file system is read-only and safe for
// concurrent use.
func FS() fs.FS { return files }
