// Command heft is git for model weights: see README.md.
package main

import (
	"os"

	"github.com/heft-dev/heft/cli"
)

func main() {
	os.Exit(cli.Main(os.Args, os.Stdout, os.Stderr))
}
