//go:build !race

package cpuratio

// RaceDetector is true in a build with the race detector (see race.go).
const RaceDetector = false
