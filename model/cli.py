import click


@click.group()
def main():
    """CHR training and evaluation."""
