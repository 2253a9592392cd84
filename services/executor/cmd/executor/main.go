// Command executor runs one replica of one vendor's executor on its own;
// SWITCHYARD_VENDOR names the vendor (a key of the policy's vendors), whose
// kind picks the adapter. Run N copies with the same SWITCHYARD_VENDOR to
// scale that vendor. It is assembled exactly as inside
// `switchyard up` (executor.FromRuntime on the process's svc.Runtime).
// Configuration comes from SWITCHYARD_* variables (see README).
package main

import (
	"github.com/switchyard-llm/switchyard/pkg/svc"
	"github.com/switchyard-llm/switchyard/services/executor"
)

func main() { svc.Main("executor", &executor.ServiceConfig{}) }
