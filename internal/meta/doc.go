// Package meta holds tests of repository-wide conventions (every package
// documented); it has no code of its own.
package meta
