module github.com/switchyard-llm/switchyard/services/sim

go 1.26.8

require (
	github.com/rs/zerolog v1.35.1
	github.com/switchyard-llm/switchyard/pkg v0.0.0
)

require (
	github.com/goccy/go-json v0.12.0 // indirect
	github.com/kelseyhightower/envconfig v1.4.0 // indirect
	github.com/mattn/go-colorable v0.1.14 // indirect
	github.com/mattn/go-isatty v0.0.20 // indirect
	github.com/santhosh-tekuri/jsonschema/v6 v6.0.3 // indirect
	github.com/switchyard-llm/switchyard/schemas v0.0.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
	golang.org/x/text v0.43.0 // indirect
)

replace (
	github.com/switchyard-llm/switchyard/pkg => ../../pkg
	github.com/switchyard-llm/switchyard/schemas => ../../schemas
)
