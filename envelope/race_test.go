//go:build race

package envelope

func init() { raceEnabled = true }
