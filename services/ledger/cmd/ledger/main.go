// Command ledger runs the ledger on its own, assembled exactly as inside
// `switchyard up` (ledger.FromRuntime on the process's svc.Runtime).
// Configuration comes from SWITCHYARD_* variables (see README).
package main

import (
	"github.com/switchyard-llm/switchyard/pkg/svc"
	"github.com/switchyard-llm/switchyard/services/ledger"
)

func main() { svc.Main("ledger", &ledger.ServiceConfig{}) }
