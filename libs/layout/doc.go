// Package layout holds the tests that keep the repository's dependency rules (DESIGN.md §6):
// libs never import services; a service never imports another service's packages, except
// the outpost module, the one composition root allowed to import every service's Run.
package layout
