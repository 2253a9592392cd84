module github.com/switchyard-llm/switchyard/services/switchyard

go 1.26.8

require (
	github.com/switchyard-llm/switchyard/pkg v0.0.0
	github.com/switchyard-llm/switchyard/schemas v0.0.0
	github.com/switchyard-llm/switchyard/services/executor v0.0.0
	github.com/switchyard-llm/switchyard/services/gate v0.0.0
	github.com/switchyard-llm/switchyard/services/intake v0.0.0
	github.com/switchyard-llm/switchyard/services/ledger v0.0.0
	github.com/switchyard-llm/switchyard/services/router v0.0.0
	github.com/switchyard-llm/switchyard/services/sim v0.0.0
)

replace (
	github.com/switchyard-llm/switchyard/pkg => ../../pkg
	github.com/switchyard-llm/switchyard/schemas => ../../schemas
	github.com/switchyard-llm/switchyard/services/executor => ../executor
	github.com/switchyard-llm/switchyard/services/gate => ../gate
	github.com/switchyard-llm/switchyard/services/intake => ../intake
	github.com/switchyard-llm/switchyard/services/ledger => ../ledger
	github.com/switchyard-llm/switchyard/services/router => ../router
	github.com/switchyard-llm/switchyard/services/sim => ../sim
)
