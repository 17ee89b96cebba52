module github.com/outpost-dev/outpost/services/gateway

go 1.26.8
