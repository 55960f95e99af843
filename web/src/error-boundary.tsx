/** A page that fails to render says so, instead of leaving a blank screen. */
import { Component, type ReactNode } from 'react';

export class PageErrorBoundary extends Component<{ children: ReactNode; resetKey: string }, { error: Error | null; key: string }> {
  override state: { error: Error | null; key: string } = { error: null, key: this.props.resetKey };

  static getDerivedStateFromError(error: Error): { error: Error } {
    return { error };
  }

  static getDerivedStateFromProps(props: { resetKey: string }, state: { key: string }): { error: null; key: string } | null {
    // another page: try again
    return props.resetKey !== state.key ? { error: null, key: props.resetKey } : null;
  }

  override render(): ReactNode {
    if (!this.state.error) return this.props.children;
    return (
      <div className="error" role="alert">
        <p>This page failed to show: {this.state.error.message}</p>
        <p><a href="#/">Back to the pool</a> or reload the page.</p>
      </div>
    );
  }
}
