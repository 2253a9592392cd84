// Command router runs the router on its own, assembled exactly as inside
// `switchyard up` (router.FromRuntime on the process's svc.Runtime).
// Configuration comes from SWITCHYARD_* variables (see README).
package main

import (
	"github.com/switchyard-llm/switchyard/pkg/svc"
	"github.com/switchyard-llm/switchyard/services/router"
)

func main() { svc.Main("router", &router.ServiceConfig{}) }
