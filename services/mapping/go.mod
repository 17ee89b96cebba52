module github.com/outpost-dev/outpost/services/mapping

go 1.26.8

require (
	github.com/nats-io/nats.go v1.55.0
	github.com/outpost-dev/outpost/libs v0.0.0
	go.opentelemetry.io/otel/trace v1.47.0
	go.yaml.in/yaml/v3 v3.0.6
)
