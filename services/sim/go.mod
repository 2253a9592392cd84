module github.com/switchyard-llm/switchyard/services/sim

go 1.26.8

require (
	github.com/switchyard-llm/switchyard/pkg v0.0.0
	github.com/switchyard-llm/switchyard/schemas v0.0.0
)

replace (
	github.com/switchyard-llm/switchyard/pkg => ../../pkg
	github.com/switchyard-llm/switchyard/schemas => ../../schemas
)
