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

require (
	github.com/antithesishq/antithesis-sdk-go v0.8.0-default-no-op // indirect
	github.com/google/go-tpm v0.9.8 // indirect
	github.com/kelseyhightower/envconfig v1.4.0 // indirect
	github.com/klauspost/compress v1.20.3 // indirect
	github.com/mattn/go-colorable v0.1.14 // indirect
	github.com/mattn/go-isatty v0.0.20 // indirect
	github.com/minio/highwayhash v1.0.4 // indirect
	github.com/nats-io/jwt/v2 v2.8.2 // indirect
	github.com/nats-io/nats-server/v2 v2.15.2 // indirect
	github.com/nats-io/nats.go v1.55.0 // indirect
	github.com/nats-io/nkeys v0.4.16 // indirect
	github.com/nats-io/nuid v1.0.1 // indirect
	github.com/prometheus/client_golang v1.25.0 // indirect
	github.com/rs/zerolog v1.35.1 // indirect
	golang.org/x/crypto v0.58.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
	golang.org/x/time v0.16.0 // indirect
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
