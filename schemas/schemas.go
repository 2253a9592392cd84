// Package schemas embeds the public envelope JSON Schemas and the ClickHouse
// DDL so that services validate against, and migrate with, the same files
// that document the contract. There is one copy of each schema: this folder.
package schemas

import "embed"

// FS holds every *.json schema and clickhouse/*.sql migration.
//
//go:embed *.json clickhouse/*.sql
var FS embed.FS

// File names of the envelope schemas inside FS.
const (
	Request       = "request.schema.json"
	Reply         = "reply.schema.json"
	AttemptEvent  = "attempt_event.schema.json"
	RequestEvent  = "request_event.schema.json"
	ClickHouseDir = "clickhouse"
)
