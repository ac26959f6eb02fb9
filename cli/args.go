package cli

import (
	"strings"

	"github.com/urfave/cli/v2"
)

// interspersed moves a command's flags in front of its positional arguments.
// urfave/cli v2 stops parsing flags at the first positional argument (Go's flag
// package does), but the documented forms put flags last: `heft import SRC --name
// NAME`. Global flags before the command are left where they are; "--" ends flag
// reordering as usual.
func interspersed(app *cli.App, args []string) []string {
	if len(args) < 2 {
		return args
	}
	out := []string{args[0]}
	i := 1
	// Global flags up to the command name.
	for i < len(args) && strings.HasPrefix(args[i], "-") && args[i] != "--" {
		out = append(out, args[i])
		if takesValue(app.Flags, args[i]) {
			i++
			if i < len(args) {
				out = append(out, args[i])
			}
		}
		i++
	}
	cmds := app.Commands
	for i < len(args) {
		cmd := findCommand(cmds, args[i])
		if cmd == nil {
			return append(out, args[i:]...)
		}
		out = append(out, args[i])
		i++
		if len(cmd.Subcommands) > 0 && i < len(args) && findCommand(cmd.Subcommands, args[i]) != nil {
			cmds = cmd.Subcommands
			continue
		}
		var flags, positional []string
		for ; i < len(args); i++ {
			a := args[i]
			if a == "--" {
				positional = append(positional, args[i:]...)
				break
			}
			if strings.HasPrefix(a, "-") && a != "-" {
				flags = append(flags, a)
				if takesValue(cmd.Flags, a) && i+1 < len(args) {
					i++
					flags = append(flags, args[i])
				}
				continue
			}
			positional = append(positional, a)
		}
		return append(append(out, flags...), positional...)
	}
	return out
}

func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}

// takesValue reports whether arg names a flag that consumes the next argument.
func takesValue(flags []cli.Flag, arg string) bool {
	if strings.Contains(arg, "=") {
		return false
	}
	name := strings.TrimLeft(arg, "-")
	for _, f := range flags {
		for _, n := range f.Names() {
			if n == name {
				_, isBool := f.(*cli.BoolFlag)
				return !isBool
			}
		}
	}
	return false
}
