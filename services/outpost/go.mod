module github.com/outpost-dev/outpost/services/outpost

go 1.26.8
