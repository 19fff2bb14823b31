"""qinco-bench rd (placeholder until implemented)."""
import click


@click.command("rd")
def rd():
    """Not implemented yet."""
    raise click.ClickException("qinco-bench rd is not implemented yet")
