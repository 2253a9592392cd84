// Command intake runs the intake on its own, assembled exactly as inside
// `switchyard up` (intake.FromRuntime on the process's svc.Runtime).
// Configuration comes from SWITCHYARD_* variables (see README).
package main

import (
	"github.com/switchyard-llm/switchyard/pkg/svc"
	"github.com/switchyard-llm/switchyard/services/intake"
)

func main() { svc.Main("intake", &intake.ServiceConfig{}) }
