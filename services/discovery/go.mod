module github.com/outpost-dev/outpost/services/discovery

go 1.26.8

require github.com/outpost-dev/outpost/libs v0.0.0

replace github.com/outpost-dev/outpost/libs => ../../libs
